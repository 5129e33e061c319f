"""Marshmallow schemas of the JSON contract, one module per route family; APIFlask turns
them into the OpenAPI document (components named by class, so class names are the contract)."""
