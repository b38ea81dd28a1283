"""HTTP routes of the API server under `/api/v1`, one module per resource."""
