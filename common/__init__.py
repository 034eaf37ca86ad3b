"""Leaf helpers every stage may use (rotations, atomic files); they import no other package
of the project."""
