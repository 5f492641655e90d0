"""Entropy coding: integer frequency tables and the coders that turn symbols into bytes."""
