"""The plugin host (pluggy) and Tandem's built-in plugins: field drivers and BMS functions."""
