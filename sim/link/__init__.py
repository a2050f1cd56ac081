"""The host link: the byte protocol and the host end of the link to a board or a simulated UART."""
