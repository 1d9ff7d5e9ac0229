"""Helpers the tests share: free ports, process groups, health polling."""
