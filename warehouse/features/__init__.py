"""The feature catalog as templated SQL: headers, registry, lineage and the look-ahead lint."""
