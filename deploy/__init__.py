"""Deployment helpers: local image builds for the compose stack, and running Docker Compose."""
