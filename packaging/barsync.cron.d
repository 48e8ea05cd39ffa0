# /etc/cron.d/barsync: sync this Barman passive node from its primary every minute.
# barsync's cron lock makes a run that finds the previous one still going skip (and warn when
# that one has held the lock for long).
* * * * * barman [ -x /usr/local/bin/barsync ] && /usr/local/bin/barsync -q cron
