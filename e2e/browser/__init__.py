"""A real WebRTC stack (Debian's headless Chromium) driven through stunnerd (issue 15)."""
