"""SIP signalling: the OpenSIPS B2B backend and the direct SIP UAS, behind one interface."""
