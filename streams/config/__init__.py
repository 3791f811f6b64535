"""Configuration: ``topology.yaml`` loaded into typed, frozen objects."""
