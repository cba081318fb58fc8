"""Readers and writers for every weight format users have, all offline."""
