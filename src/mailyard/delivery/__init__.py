"""Delivery: the send service that schedules local and remote deliveries, retries and bounces."""
