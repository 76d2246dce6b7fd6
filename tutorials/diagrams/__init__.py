"""Concept diagrams for the course, drawn with matplotlib by code kept in the repo."""
