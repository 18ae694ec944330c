"""Configuration: the typed schema (`schema`), composing presets from `conf/` (`compose`), and
where each experiment's outputs live (`paths`)."""
