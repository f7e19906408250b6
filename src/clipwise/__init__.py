"""clipwise: from a folder of labelled audio to a trained, honestly evaluated and deployable sound classifier."""

__version__ = "0.1.0"
