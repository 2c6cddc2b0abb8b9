"""taskservice: the course's capstone, one production FastAPI service assembled from lessons 01-13."""
