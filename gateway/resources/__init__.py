"""Falcon resources, one module per API family; each reads ``req.context`` and calls one collaborator."""
