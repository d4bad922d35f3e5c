"""Logical axis names and the rules that map them onto a device mesh."""
