"""The modules behind :mod:`fastssl.models.utils`, one per topic.

Import from :mod:`fastssl.models.utils` (LightlySSL's public path); these modules are
private so that they can be split or merged without breaking anyone.
"""
