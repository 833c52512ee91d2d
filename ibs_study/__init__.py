"""ibs_study."""
