"""Built-in model plugins (installed as inference_pio.plugins), one folder per model family."""
