"""Raw data: building it from shipped packages, validating it, splitting it."""
