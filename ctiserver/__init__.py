"""ctiserver: a contact-center server driving Asterisk over AMI and FastAGI."""

__version__ = "0.1.0"
