"""The online half: the recommendation service, its Python client, and the `twotower` command."""
