// Package config implements Pen's command language: the penctl commands
// that configure pen from -O, from a -F file, from the control socket and
// from the admin UI. It parses and validates commands, applies them to a
// Config, answers with Pen's exact replies, and writes a configuration file
// in the layout of Pen's write command followed by the settings Pen itself
// does not save.
//
// A Config is a value: every change is made on a copy, validated in full,
// and only then handed to the running Engine, so a bad line never leaves a
// half-applied configuration behind. Successive configurations share the
// server table and the access lists that a change left alone (a change
// copies what it changes), so no Config handed out may be changed in
// place.
//
// Where things are: model.go holds the Config and its limits, spec.go the
// parsers of addresses and specs, interp.go the Interp and its
// transactions' commit, txn.go the running of lines, commands.go the
// command table, whose entries live in the cmd_*.go files by subject.
// files.go says what the admin UI may not do with files, save.go how the
// -F file is written, write.go what is written.
//
// What autowrite rewrites: the whole -F file, in write's layout. Comments,
// blank lines, the order of lines and include lines are not kept (the
// settings an included file made are written into the -F file itself).
// Autowrite saves changes made through the control socket and the admin
// UI. It never writes the -F file before pen has read it, it keeps a text
// of the file that pen did not read or write (an edit a HUP refused) as
// FILE.rejected before replacing it, and it writes through a symlink.
// A change that was applied but not saved is reported as a *SaveError.
package config
