"""The registry database: ORM schema, engines, schema gate and queries."""
