% Multi-digit addition (DeepProbLog): two numbers of two digits each, written as lists of
% images (most significant digit first), and their sum as the label.
% Query: multi_addition([tensor(train(0)), tensor(train(1))], [tensor(train(2)), tensor(train(3))], 98).

nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).

number([], Result, Result).
number([H|T], Acc, Result) :- digit(H, D), Acc2 is D + 10 * Acc, number(T, Acc2, Result).
number(X, Y) :- number(X, 0, Y).

multi_addition(X, Y, Z) :- number(X, A), number(Y, B), Z is A + B.
