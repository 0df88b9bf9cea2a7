"""Base utilities every other part may use: input checks, atomic files and display paths, and the
course's pinned, sha256-verified assets. Imports nothing else from the course.
"""
