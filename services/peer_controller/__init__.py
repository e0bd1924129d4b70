"""Peer controller: one downloader Deployment per peer listed in a ConfigMap (Kubernetes only)."""
