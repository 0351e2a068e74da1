"""Cropping detected objects out of images (LightlySSL's ``lightly.utils.cropping``)."""
