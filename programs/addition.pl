% MNIST addition in the form of the GEDI paper (Table 6): three images X, Y, Z whose digits
% A, B, C satisfy C is A + B.  Nothing is labelled: the constraint alone names the digits.
% Examples: (a, b) uniform with a + b =< 9, one image each of a, b and a + b.
% Query: addition(tensor(train(0)), tensor(train(1)), tensor(train(2))).

nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).

addition(X, Y, Z) :- digit(X, A), digit(Y, B), digit(Z, C), C is A + B.
