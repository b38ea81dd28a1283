"""ceems_api_server: compute-unit store, resource managers, updaters and the REST API."""
