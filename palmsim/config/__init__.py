"""Configuration: YAML files to frozen, validated specs."""
