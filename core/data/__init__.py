"""Finding, validating and loading images and captions."""
