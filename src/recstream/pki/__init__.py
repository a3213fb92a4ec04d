"""Certificates and keys: recording certificates, CSRs, CA bundles, validation."""
