"""The HTTP API (FastAPI): routes, dependencies, schemas and error mapping.

Thin by design: a route parses its request, checks the caller's permission through a
dependency, calls one service, and shapes the answer.
"""
