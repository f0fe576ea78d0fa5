# zsh zsh_complete.zsh DIR LINE: the candidates zsh offers for LINE, one a line, with the
# _fleet script in DIR on fpath (tests/unit/test_cli_completion.py). An interactive zsh in a
# pseudo-terminal is sent LINE and a Tab; a wrapped compadd prints what it is given.
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=''; fpath=(${(q)1} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z 'compadd() { builtin compadd -O __hits "$@"; (( ${#__hits} )) && print -rl -- "<<""HITS" "${__hits[@]}" "HITS"">>"; builtin compadd "$@" }'
zpty -w z 'comppostfuncs=(__end); __end() { print -r -- "<<""END>>"; exit }'
zpty -w z "bindkey '^I' complete-word"
zpty -w -n z "$2"$'\t'
integer inside=0
while zpty -r z out; do
  out=${out//$'\r'/}; out=${out%$'\n'}
  case $out in
    *'<<END>>'*) break ;;
    *'<<HITS') inside=1 ;;
    *'HITS>>'*) inside=0 ;;
    *) (( inside )) && print -r -- $out ;;
  esac
done
zpty -d z
