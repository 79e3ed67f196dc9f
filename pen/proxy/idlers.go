package proxy

// Idlers are upstream connections with no client, kept open to the
// servers in round-robin order (Pen's idlers command). What they receive
// is thrown away.

func (l *Loop) addIdler() bool {
	c := l.newConn()
	if c == nil {
		return false
	}
	c.fl |= fIdler
	c.sess = l.tb.OpenIdler()
	tg, ok := c.sess.First()
	if !ok {
		l.closeConn(c)
		return false
	}
	l.idlers++
	if !l.connect(c, tg, true) {
		l.refused(c)
		return false
	}
	return true
}

func (l *Loop) closeOneIdler() {
	for _, c := range l.conns {
		if c != nil && c.state != stateUnused && c.fl&fIdler != 0 {
			l.closeConn(c)
			return
		}
	}
	l.idlers = 0
}
