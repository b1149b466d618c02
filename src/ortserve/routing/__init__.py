"""Which version answers a request, and what else happens around the answer: traffic split, shadow copies,
the response cache."""
