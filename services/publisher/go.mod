module github.com/custody-dev/custody/services/publisher

go 1.26.8

require github.com/custody-dev/custody/libs v0.0.0

replace github.com/custody-dev/custody/libs => ../../libs
