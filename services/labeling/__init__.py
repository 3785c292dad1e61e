"""labeling: labeling jobs, work queues for a workforce, consolidation, the annotator's page."""
