"""The live shell: bars arriving from a broker, aggregated, validated and stored as the warehouse stores them."""
