"""Geometry on numpy arrays: point clouds, depth registration, rigid transforms."""
