"""ecgforge: self-supervised pretraining of ECG encoders, driven by TOML recipes."""
__version__ = "0.1.0"
