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
package config
