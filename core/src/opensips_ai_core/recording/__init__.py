"""What is kept of a call once it ended: its recording, its transcript, the post-call webhook."""
