"""k-fold cross-validation over recordings: the student against BirdNET on the same files."""
