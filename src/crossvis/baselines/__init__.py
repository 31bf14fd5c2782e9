"""Other methods trained and scored on the same data and budget, as yardsticks for CrossVIS."""
