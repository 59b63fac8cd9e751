"""The LipSync conformance suite (make conformance IMPL=...)."""
