"""Webhooks: a job's events POSTed to the submitter's URL, signed, retried, throttled.

The API checks the URL at submit (``ssrf.check_webhook_url``) and registers the job (``outbox.register``);
a separate sender process (``gpuq webhooks``, ``sender.py``) follows the registered jobs' event streams
and delivers, so a slow or dead receiver never blocks or fails a job.
"""
