"""Knowledge distillation from BirdNET V2.4: the teacher model and its soft labels."""
