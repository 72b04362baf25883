"""The native FlashTTS API: /clone_voice, /speak, /multi_speak and /server_info (also under /v1)."""
