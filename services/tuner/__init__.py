"""The tuner: hyperparameter tuning jobs whose trials are the trainer's training jobs."""
