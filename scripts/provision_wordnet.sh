#!/usr/bin/env bash
# Install Debian's WordNet 3.0 (wordnet-base + wordnet-sense-index -> /usr/share/wordnet) when it is
# missing and we may: as root or with passwordless sudo. rosearch copies it into NLTK's layout itself
# (rosearch.attack.resources). Never fails the caller: without WordNet only PWWS/WordNet attacks are off.
WORDNET_DIR=${ROSEARCH_WORDNET_DIR:-/usr/share/wordnet}
HOW="install it with: sudo apt-get install wordnet-base wordnet-sense-index (or set ROSEARCH_WORDNET_DIR / attack.wordnet_dir)"

if [ -f "$WORDNET_DIR/data.noun" ] && [ -f "$WORDNET_DIR/index.sense" ]; then
  exit 0
fi
if [ -n "${ROSEARCH_WORDNET_DIR:-}" ]; then
  echo "provision_wordnet: ROSEARCH_WORDNET_DIR=$ROSEARCH_WORDNET_DIR holds no WordNet (data.noun, index.sense); PWWS/WordNet attacks will be unavailable"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "provision_wordnet: WordNet not found in /usr/share/wordnet and no root access; PWWS/WordNet attacks will be unavailable ($HOW)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "provision_wordnet: WordNet not found and apt-get is not available; PWWS/WordNet attacks will be unavailable ($HOW, or point ROSEARCH_WORDNET_DIR at a WordNet 3.0 dict dir)"
  exit 0
fi
echo "provision_wordnet: installing wordnet-base and wordnet-sense-index"
if $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null \
   && [ -f /usr/share/wordnet/data.noun ] && [ -f /usr/share/wordnet/index.sense ]; then
  echo "provision_wordnet: WordNet installed in /usr/share/wordnet"
else
  echo "provision_wordnet: installing WordNet failed; PWWS/WordNet attacks will be unavailable ($HOW)"
fi
exit 0
