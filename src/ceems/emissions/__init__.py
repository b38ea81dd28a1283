"""Emission-factor providers: grid carbon intensity per country, static or fetched online."""
